{{ config(unique_key='study_pseudo_uid') }}
-- depends_on: {{ source('build', 'build_files') }}
-- depends_on: {{ ref('internal_anonymization_rules') }}
-- depends_on: {{ ref('internal_column_types') }}
-- depends_on: {{ ref('stg_phi_terms') }}
{#- The column list and the pseudonym joins come from the internal_anonymization_rules seed (macros/deid.sql). #}
with studies as (
    select * from {{ ref('stg_studies') }} as studies
    {% if is_incremental() %}
    where {{ in_build('studies') }} or {{ descriptor_has_new_term('studies', 'studies') }}
    {% endif %}
),

base as (
    select
        studies.*
    from studies
),

deidentified as (
    select
        {{ deid_columns('studies', 'base') }},
        base.ingested_at,
        {{ deid_provenance() }}
    from base
    {{- deid_joins('studies', 'base', patient_key='patient_key') }}
)

select * from deidentified
