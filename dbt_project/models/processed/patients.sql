{{ config(unique_key='patient_pseudo_id') }}
-- depends_on: {{ source('build', 'build_files') }}
-- depends_on: {{ ref('internal_anonymization_rules') }}
-- depends_on: {{ ref('internal_column_types') }}
{#- The column list and the pseudonym joins come from the internal_anonymization_rules seed (macros/deid.sql). #}
with patients as (
    select * from {{ ref('stg_patients') }} as patients
    {% if is_incremental() %}
    where {{ in_build('patients') }}
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
