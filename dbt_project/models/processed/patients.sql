{{ config(unique_key='patient_pseudo_id') }}
-- depends_on: {{ ref('internal_anonymization_rules') }}
-- depends_on: {{ ref('internal_column_types') }}
{#- The column list and the pseudonym joins come from the internal_anonymization_rules seed (macros/deid.sql). #}
with patients as (
    select * from {{ ref('stg_patients') }}
    {% if is_incremental() %}
    where ingested_at > (select max(ingested_at) from {{ this }})
    {% endif %}
),

deidentified as (
    select
        {{ deid_columns('patients', 'patients') }},
        patients.ingested_at,
        {{ deid_provenance() }}
    from patients
    {{- deid_joins('patients', 'patients') }}
)

select * from deidentified
