{{ config(unique_key='sop_instance_pseudo_uid') }}
-- depends_on: {{ source('build', 'build_files') }}
-- depends_on: {{ ref('internal_anonymization_rules') }}
-- depends_on: {{ ref('internal_column_types') }}
{#- The column list and the pseudonym joins come from the internal_anonymization_rules seed (macros/deid.sql). #}
with images as (
    select * from {{ ref('stg_images') }} as images
    {% if is_incremental() %}
    where {{ study_in_build('images') }}
    {% endif %}
),

base as (
    select
        images.*,
        studies.patient_key
    from images
    left join {{ ref('stg_studies') }} as studies on images.study_instance_uid = studies.study_instance_uid
),

deidentified as (
    select
        {{ deid_columns('images', 'base') }},
        base.ingested_at,
        {{ deid_provenance() }}
    from base
    {{- deid_joins('images', 'base', patient_key='patient_key') }}
)

select * from deidentified
